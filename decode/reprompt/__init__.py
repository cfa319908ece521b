"""Engines driven one continuation at a time on token ids: s1's re-prompt loop, for engines where no
logits processor can run, and plain decoding with no thinking format. Each backend supplies an
`Engine` (a function from `Continuation` requests to new token ids)."""

from .loop import Continuation, Engine, reprompt_generate

__all__ = ["Continuation", "Engine", "reprompt_generate"]
