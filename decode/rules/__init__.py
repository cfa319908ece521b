"""The budget-forcing rules every engine shares, with no engine and no model loading in them.

The budget and the thinking formats, the per-sequence state machine that applies the rules, the
sampling that makes the model's proposal, the result type, the reference loop the engines are
checked against, the replay that rebuilds a result from tokens, the request-argument keys a vLLM
request carries, and the checks on `generate`'s arguments.
"""
