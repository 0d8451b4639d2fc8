"""Bing Chat emulator: conversation create + Sydney ChatHub over real loopback sockets.

Ways to make it misbehave, from the narrowest to the broadest:

- **Prompt directives**: `emulate:NAME[=VALUE]` tokens in one chat's text (`emulate:drop`,
  `emulate:throttled`, `emulate:words=300`, ...) affect that chat only. Copilot chats also take
  the `COPILOT_FAULTS` (`emulate:hashcash`, `emulate:cloudflare`, `emulate:error_event`, ...).
- **Account cookie flags**: a Cookie header containing `emulate=FLAG` (several flags may be
  comma-separated: `emulate=throttled,captcha`) makes that account behave like a sick Bing account:

  | flag | create | every chat |
  |---|---|---|
  | `emulate=expired` | `result.value` `UnauthorizedRequest` | `UnauthorizedRequest` |
  | `emulate=captcha` | succeeds | `CaptchaChallenge` |
  | `emulate=throttled` | succeeds | `Throttled` |
  | `emulate=blocked` | succeeds | `Forbidden` |

  The Copilot endpoints read the same flags from the Cookie header or the access token (a token
  `emulate=FLAG` works): `expired` answers `/c/api/start` and the websocket upgrade with 401,
  `blocked` answers start with `isBlocked: true`, `throttled` answers start with HTTP 429, and
  `captcha` meets every chat with a Cloudflare challenge.

  | `emulate=no_coins` | succeeds | succeeds; Image Creator answers "0 coins available" |
  | `emulate=upload_refused` | succeeds | succeeds; kblob answers an empty `blobId` |

  A conversation remembers the flags of the create that made it; the flags on the websocket
  upgrade's Cookie header count too (the union applies). Flags outrank every other fault, and a
  chat they refuse consumes no `Faults.times` use. Unknown flags are logged and ignored.
- **Fault switches** (`BingEmulator.faults`, a `Faults`): `create` (one of `CREATE_FAULTS`),
  `chat` (one of `CHAT_FAULTS`, used when the prompt names none) and `upgrade` (an HTTP status to
  refuse the websocket with), for every request or, with `times`, for the next N.
- **Fault rates** (also on `Faults`), drawn from `BingEmulator.random` (seed it with
  `BingEmulator(seed=...)` for a reproducible sequence of draws), only for requests no switch,
  directive or flag already decides:
  - `create_failure_rate`: that share of creates answers HTTP 500 (a transient failure);
  - `drop_rate`: that share of chats aborts the TCP connection after some answer text (`drop`);
  - `drop_before_text_rate`: that share aborts it before any answer text (`drop_start`).

- **Images** (`emulator/images.py`, on the keep-alive port, which stands in for www.bing.com:
  `BingEmulator.web_url`): kblob upload, Image Creator (the 302 with the request id, polling, the
  result page, the pictures). `Faults.image` (one of `IMAGE_FAULTS`) or an `emulate:NAME` directive
  in the image prompt makes Image Creator refuse (`image_blocked`, `image_reviewed`,
  `image_language`, `image_unavailable`, `no_coins`), answer `Pending` (`image_pending`), never
  finish (`image_timeout`), show placeholders (`image_placeholder`) or want `rt=3`
  (`image_rt3`); `Faults.upload` (`upload_refused`, `upload_http500`) breaks kblob. Anonymous
  accounts (no `_U`) are redirected to sign in. In Creative and Precise (`gencontentv3`), a chat
  prompt with `emulate:draw`
  (`emulate:draw=quiet`: no answer text), an image fault directive, or starting "Draw ..." /
  "Create an image of ..." is answered with a `GenerateContentQuery` (`contentType: IMAGE`); a chat
  frame whose `message.imageUrl` is not an uploaded blob is refused (`InvalidRequest`);
  `emulate:no_image` answers a drawing request with words only. Copilot's `/c/api/attachments`
  stores pictures (`copilot_attachments`); a `send` event's `image` part must name one, and a
  drawing request gets one `imageGenerated` picture. Records: `uploads`, `blobs`, `creations`,
  `pictures`, `copilot_attachments`.

  The chosen fault is kept in the connection's `ConnectionRecord.fault` (`account:FLAG` for an
  account flag), and every applied fault is counted in `BingEmulator.fault_counts` by
  `create:NAME` or `chat:NAME`.
"""

from .faults import CHAT_FAULTS, COPILOT_FAULTS, CREATE_FAULTS, Faults
from .server import BingEmulator
from .state import ConnectionRecord, Conversation
from .thread import EmulatorThread

__all__ = [
    "CHAT_FAULTS",
    "COPILOT_FAULTS",
    "CREATE_FAULTS",
    "BingEmulator",
    "ConnectionRecord",
    "Conversation",
    "EmulatorThread",
    "Faults",
]
