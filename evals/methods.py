"""Ways to control thinking time, each a named method with a sweep of points.

A method turns a problem and a point of its sweep (a budget N, a number of waits, a class of
thinking, a number of votes) into what the decoder runs: the user message, a `Budget` and the
sampling settings. All methods of a recipe run at the same budgets, so they can be compared.

- budget_forcing (s1): the decoder forces a maximum of N thinking tokens; `num_ignore` sweeps
  s1's "Wait x k" (k ends of thinking replaced by the wait string, no maximum unless given).
- token_conditional (s1): "Think for up to N tokens." appended; forced too with `forcing: true`.
- length_prompt (L1): "Think for N tokens." (`mode: exact`) or "Think for maximum N tokens."
  (`mode: max`) appended, as L1 trains; forced too with `forcing: true`.
- class_conditional (s1): s1's instruction to think for a short, or a long, time; an unprompted point
  is run too, since s1 scores each class against the run without one.
- step_conditional (s1): "Think for up to N steps." appended, N counted in steps, for a model that
  writes a steps-left marker before each step (format `s1_steps`); with `forcing: true` thinking
  ends when the model starts the marker of zero steps left, as s1's "+ budget forcing" run.
- rejection_sampling (s1): sample until the thinking fits in N tokens, at most `max_attempts` times.
- majority_vote (parallel scaling): k samples, the most common answer.

A method that sets no maximum (the "Wait" x k sweep, token- and class-conditional control and length
prompts without forcing, majority vote without budgets) could think until the generation window is
spent and leave no answer. `with_answer_room` gives such a budget the recipe's thinking cap, which
keeps room for the answer, as s1's harness does with `max_tokens_thinking=auto`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from decode import Budget, Sampling

METHODS = (
    "budget_forcing",
    "token_conditional",
    "length_prompt",
    "class_conditional",
    "step_conditional",
    "rejection_sampling",
    "majority_vote",
)
# s1's class-conditional prompts, word for word (simplescaling/s1@77272c6,
# eval/lm-evaluation-harness/lm_eval/tasks/aime/utils.py, PROMPTSHORT and PROMPTLONG).
CLASSES = {
    "short": "Answer after a short amount of thinking. Do not spend excessive time double-checking your work.",
    "long": (
        "Answer after a long amount of thinking. If you feel like you are finished early, spend the extra time "
        "trying to double-check your work until you are absolutely sure that you have the correct answer."
    ),
}
# s1's step-conditional prompt after the question (simplescaling/s1@77272c6,
# eval/lm-evaluation-harness/lm_eval/tasks/aime/utils.py:12, PROMPTSTEP); models trained for it saw it too.
STEP_PROMPT = "Think for up to {n} steps."
# The point class-conditional control is scored against (s1's Table 3: each class's mean thinking
# against the run without a class prompt), and which way each class should move from it.
UNPROMPTED = "unprompted"
CLASS_DIRECTIONS = {"short": -1, "long": 1}


class MethodError(ValueError):
    """A method entry of a recipe that names an unknown method or an invalid setting."""


@dataclass(frozen=True)
class MethodSpec:
    """One control method of a recipe.

    Attributes:
        method: one of METHODS.
        label: the name in reports (default: the method, with its mode and "+forcing").
        budgets: thinking budgets N to sweep (tokens; step_conditional: steps).
        num_ignore: for budget_forcing, s1's "Wait x k" sweep (each k a point; with no `budgets`,
            thinking has no maximum).
        min_thinking: a minimum thinking budget for budget_forcing (tokens).
        wait: the string that replaces a suppressed end of thinking ("Wait", "Hmm", "Alternatively").
        forcing: token_conditional / length_prompt: also force the budget with the decoder;
            step_conditional: end thinking at the marker of zero steps left.
        mode: length_prompt: "exact" or "max".
        classes: class_conditional: label -> instruction (default: s1's "short" and "long" prompts). A
            class named "short" or "long" is in Control: its mean thinking must fall below, or rise
            above, that of the "unprompted" point, which the method always runs.
        max_attempts: rejection_sampling: samples drawn before giving up on a question.
        votes: majority_vote: numbers of samples k to vote over.
        temperature, top_p: sampling of rejection_sampling and majority_vote (their definition
            needs sampling); other methods use the recipe's sampling.
        max_tokens_factor: caps each completion of a point at this many times its budget N (L1's
            evaluation scripts: 2, the cap of "Think for N tokens."); 0: the recipe's `max_tokens`.
    """

    method: str
    label: str = ""
    budgets: tuple[int, ...] = ()
    num_ignore: tuple[int, ...] = ()
    min_thinking: int = 0
    wait: str = "Wait"
    forcing: bool = False
    mode: str = "exact"
    classes: dict[str, str] = field(default_factory=dict)
    max_attempts: int = 8
    votes: tuple[int, ...] = (1, 2, 4, 8)
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens_factor: float = 0

    def __post_init__(self) -> None:
        name = self.label or self.method
        if self.method not in METHODS:
            raise MethodError(f"unknown method {self.method!r}: known methods are {', '.join(METHODS)}")
        counts = [*self.budgets, *self.num_ignore, self.min_thinking]
        if any(isinstance(n, bool) or not isinstance(n, int) for n in counts):
            raise MethodError(f"method {name!r}: budgets, num_ignore and min_thinking must be whole numbers of tokens")
        if any(b < 0 for b in self.budgets) or any(k < 0 for k in self.num_ignore) or self.min_thinking < 0:
            raise MethodError(f"method {name!r}: budgets, num_ignore and min_thinking must be >= 0")
        if self.budgets and self.min_thinking > min(self.budgets):
            raise MethodError(
                f"method {name!r}: min_thinking ({self.min_thinking}) is above the budget {min(self.budgets)}: "
                "a minimum above the maximum cannot be honoured"
            )
        needs_budgets = self.method in ("token_conditional", "length_prompt", "rejection_sampling", "step_conditional")
        if needs_budgets and not self.budgets:
            raise MethodError(f"method {name!r}: {self.method} needs a list of budgets")
        if self.method == "budget_forcing" and not (self.budgets or self.num_ignore):
            raise MethodError(f"method {name!r}: budget_forcing needs budgets, num_ignore, or both")
        if self.mode not in ("exact", "max"):
            raise MethodError(f"method {name!r}: mode must be 'exact' or 'max', got {self.mode!r}")
        if isinstance(self.max_tokens_factor, bool) or not self.max_tokens_factor >= 0:
            raise MethodError(f"method {name!r}: max_tokens_factor must be a number >= 0 (0: no cap of its own)")
        if self.max_tokens_factor and not self.budgets:
            raise MethodError(f"method {name!r}: max_tokens_factor caps completions at a multiple of N: give budgets")
        if self.max_attempts < 1 or not self.votes or min(self.votes) < 1:
            raise MethodError(f"method {name!r}: max_attempts and every vote count must be >= 1")
        if not self.label:
            label = self.method + (f"_{self.mode}" if self.method == "length_prompt" else "")
            object.__setattr__(self, "label", label + ("+budget_forcing" if self.forcing else ""))
        if self.method == "class_conditional" and not self.classes:
            object.__setattr__(self, "classes", dict(CLASSES))
        if UNPROMPTED in self.classes:
            raise MethodError(f"method {name!r}: {UNPROMPTED!r} names the point without a class prompt; rename it")

    @classmethod
    def from_dict(cls, entry: Any) -> MethodSpec:
        if isinstance(entry, str):
            entry = {"method": entry}
        if not isinstance(entry, dict) or "method" not in entry:
            raise MethodError(f"a method must be a name or a mapping with a 'method', got {entry!r}")
        known = set(cls.__dataclass_fields__)
        unknown = set(entry) - known
        if unknown:
            raise MethodError(
                f"method {entry['method']!r}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        values = dict(entry)
        for key in ("budgets", "num_ignore", "votes"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def points(self) -> list[Point]:
        """The sweep, in order."""
        m = self.method
        if m == "budget_forcing":
            caps = list(self.budgets) or [None]
            ignores = list(self.num_ignore) or [0]
            return [Point(_label(n, k, len(ignores) > 1), n, k, self.min_thinking) for n in caps for k in ignores]
        if m == "class_conditional":
            classes = [Point(name, None, instruction=text) for name, text in self.classes.items()]
            return [Point(UNPROMPTED, None), *classes]
        if m == "majority_vote":
            caps = list(self.budgets) or [None]
            return [
                Point(_label(n, None, False) + f" k={k}" if n else f"k={k}", n, votes=k)
                for n in caps
                for k in self.votes
            ]
        return [Point(f"N={n}", n) for n in self.budgets]

    def draw_label(self, point: Point) -> str:
        """The label under which a point's generations are saved: majority-vote points share the
        draws of their budget (k votes use the first k)."""
        if self.method == "majority_vote":
            return f"N={point.budget}" if point.budget is not None else "no budget"
        return point.label

    def sampling(self, default: Sampling) -> Sampling:
        if self.method in ("rejection_sampling", "majority_vote"):
            return replace(default, temperature=self.temperature, top_p=self.top_p)
        return default

    def suffix(self, point: Point) -> str:
        """What the method appends to the question."""
        if self.method == "token_conditional":
            return f"Think for up to {point.budget} tokens."
        if self.method == "step_conditional":
            return STEP_PROMPT.format(n=point.budget)
        if self.method == "length_prompt":
            return f"Think for {'maximum ' if self.mode == 'max' else ''}{point.budget} tokens."
        if self.method == "class_conditional":
            return point.instruction
        return ""

    def max_tokens(self, point: Point, window: int) -> int:
        """The generation window of a point: the recipe's, or `max_tokens_factor` x N when that is smaller."""
        if self.max_tokens_factor and point.budget is not None:
            return min(window, max(1, int(self.max_tokens_factor * point.budget)))
        return window

    def budget(self, point: Point, max_answer_tokens: int | None) -> Budget:
        """What the decoder enforces at this point."""
        m, n = self.method, point.budget
        if m == "budget_forcing":
            return Budget(n, point.min_thinking, point.num_ignore, max_answer_tokens)
        if m in ("token_conditional", "length_prompt") and self.forcing:
            return Budget(max_thinking_tokens=n, max_answer_tokens=max_answer_tokens)
        if m == "step_conditional":  # N is in steps: no token maximum of its own
            return Budget(max_answer_tokens=max_answer_tokens, end_at_zero_steps=self.forcing)
        if m == "rejection_sampling":
            # Thinking that reaches N+1 tokens is already rejected: stop it there (forced_end marks it).
            return Budget(max_thinking_tokens=n + 1, max_answer_tokens=max_answer_tokens)
        if m == "majority_vote" and n is not None:
            return Budget(max_thinking_tokens=n, max_answer_tokens=max_answer_tokens)
        return Budget(max_answer_tokens=max_answer_tokens)


def with_answer_room(budget: Budget, thinking_cap: int | None) -> tuple[Budget, bool]:
    """The budget with `thinking_cap` as its maximum when it sets none, and whether the cap was applied."""
    if thinking_cap is None or budget.max_thinking_tokens is not None:
        return budget, False
    minimum = min(budget.min_thinking_tokens, thinking_cap)
    return replace(budget, max_thinking_tokens=thinking_cap, min_thinking_tokens=minimum), True


def record_settings(method: MethodSpec, point: Point) -> dict[str, Any]:
    """What of the method and the point decides a record beyond its prompt, budget and sampling."""
    settings: dict[str, Any] = {"method": method.method, "wait": method.wait, "min_thinking": point.min_thinking,
                                "num_ignore": point.num_ignore, "instruction": point.instruction}  # fmt: skip
    if method.method == "rejection_sampling":
        settings["max_attempts"] = method.max_attempts
    if method.max_tokens_factor:  # only when set, so runs made before the setting existed still resume
        settings["max_tokens_factor"] = method.max_tokens_factor
    return settings


@dataclass(frozen=True)
class Point:
    """One point of a method's sweep: `budget` is the N asked (None: no budget)."""

    label: str
    budget: int | None
    num_ignore: int = 0
    min_thinking: int = 0
    instruction: str = ""
    votes: int = 1


def _label(n: int | None, k: int | None, show_waits: bool) -> str:
    parts = []
    if n is not None:
        parts.append(f"N={n}")
    if show_waits or (n is None and k is not None):
        parts.append(f"wait x{k}")
    return " ".join(parts)
