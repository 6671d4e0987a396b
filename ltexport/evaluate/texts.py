"""License-clean long English text for perplexity, disjoint from the shipped calibration text.

Both come from CPython's `pydoc_data.topics` (Python Software Foundation License). Calibration uses
a few topics (ltexport/data/calibration.txt); perplexity uses every topic whose text is not in it,
in sorted order, so layer selection and quality measurement never see the same passage. The text
differs between Python versions: results record its sha256.
"""

import hashlib
from dataclasses import dataclass

from ltexport.plan.identify import default_calibration_text


@dataclass(frozen=True)
class EvalText:
    text: str
    source: str
    sha256: str


def perplexity_text() -> EvalText:
    from pydoc_data.topics import topics

    calibration = default_calibration_text()
    # A topic is "in" the calibration text when its opening is; those are skipped whole.
    keys = [k for k in sorted(topics) if topics[k].strip()[:300] not in calibration]
    text = "\n\n".join(topics[k].strip() for k in keys)
    return EvalText(text, f"pydoc_data.topics, {len(keys)} topics not in calibration.txt",
                    hashlib.sha256(text.encode()).hexdigest())
