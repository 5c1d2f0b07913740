"""What is lease-specific about a lease's plan: epochs fitted to the time a lease has.

The runs themselves are ``training.ablations.plan``'s.
"""

from __future__ import annotations

from training.ablations.plan import ABLATION

#: Provisional epochs while the runner times the first epochs: only warm-up happens before
#: the runs are re-planned, and warm-up does not depend on the total (3 epochs, less than half).
PROVISIONAL_EPOCHS = 400


def fit_epochs(epoch_seconds: dict[str, float], groups: dict[str, str], seconds_left: float,
               done: dict[str, int] | None = None, minimum: int = 5) -> dict[str, int]:
    """Epochs for each run so that all end within ``seconds_left`` (they run at once, each
    at the epoch time measured side by side). Runs of the group "ablation" share the
    smallest fit, so their rows differ only in the change they measure; other runs get
    their own. ``done`` epochs are already behind each run. Never fewer than ``minimum``."""
    done = done or {}
    fit = {name: done.get(name, 0) + int(seconds_left // max(secs, 1e-6)) for name, secs in epoch_seconds.items()}
    shared: dict[str, int] = {}
    for name, group in groups.items():
        if group == ABLATION and name in fit:
            shared[group] = min(shared.get(group, fit[name]), fit[name])
    return {name: max(minimum, shared.get(groups.get(name, ""), fit[name]) if groups.get(name) == ABLATION
                      else fit[name]) for name in fit}
