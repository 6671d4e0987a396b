"""Progress bars on stderr (stdout stays clean for tables and --json).

Bars show when stderr is a terminal; LTEXPORT_PROGRESS=1 forces them (e.g. under `script`), 0 hides them.
`disable` is always passed explicitly: tqdm's own default is switched off for third-party bars
(ltexport.console).
"""

import os
import sys

PROGRESS_ENV = "LTEXPORT_PROGRESS"


def bars_wanted() -> bool:
    forced = os.environ.get(PROGRESS_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty()


def progress(total: int, desc: str, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not (enabled and bars_wanted()),
                dynamic_ncols=True, leave=False)
