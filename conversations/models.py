"""The model catalogue: Bing's three tones (with and without web search), Copilot's three modes, aliases.

The model chooses the upstream (`ModelSpec.upstream`): `bing` (ChatHub) or `copilot`.
"""

from __future__ import annotations

from dataclasses import dataclass

from utils.errors import ModelNotFound

CREATED = 1700000000  # a fixed date: the catalogue is static, and /v1/models must be cheap


BING, COPILOT = "bing", "copilot"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    tone: str  # Bing: "Creative" | "Balanced" | "Precise"; Copilot: "" (it has no tones)
    search: bool
    description: str
    upstream: str = BING  # which upstream serves it: "bing" | "copilot"
    mode: str = ""  # Copilot's `send` mode: "chat" | "reasoning" | "smart"


_TONES = {
    "precise": ("Precise", "Bing's Precise tone: short, factual answers"),
    "balanced": ("Balanced", "Bing's Balanced tone: the default mix of facts and fluency"),
    "creative": ("Creative", "Bing's Creative tone: longer, more imaginative answers"),
}

_COPILOT_MODES = {
    "copilot": ("chat", "Microsoft Copilot (copilot.microsoft.com), its default chat mode"),
    "copilot-reasoning": (
        "reasoning",
        "Microsoft Copilot's Think Deeper mode: its reasoning streams as `reasoning_content`, apart "
        "from the answer",
    ),
    "copilot-smart": ("smart", "Microsoft Copilot's Smart mode (GPT-5): picks quick or deep answers itself"),
}

MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for name, (tone, text) in _TONES.items()
    for spec in (
        ModelSpec(name, tone, True, f"{text}, grounded in Bing web search."),
        ModelSpec(f"{name}-offline", tone, False, f"{text}, with web search turned off."),
    )
} | {
    name: ModelSpec(name, "", True, f"{text}.", COPILOT, mode)
    for name, (mode, text) in _COPILOT_MODES.items()
}


def resolve_model(requested: str | None, aliases: dict[str, str], default: str) -> ModelSpec:
    """The spec for a model id or alias; raises ModelNotFound for anything else."""
    name = requested or default
    target = aliases.get(name, name)
    spec = MODELS.get(target)
    if spec is None:
        raise ModelNotFound(f"The model `{name}` does not exist.", param="model")
    return spec


def list_models(aliases: dict[str, str]) -> list[tuple[str, ModelSpec]]:
    """Every servable id with its spec: the six Bing models, the three Copilot ones, then valid aliases."""
    entries = [(spec.id, spec) for spec in MODELS.values()]
    entries += [(alias, MODELS[target]) for alias, target in aliases.items() if target in MODELS]
    return entries
