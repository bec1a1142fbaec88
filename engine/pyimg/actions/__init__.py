"""Built-in actions that rules/ declares with `ctx.actions.builtin(...)` (the contract and the
table of them: builtins.py)."""
