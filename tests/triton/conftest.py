import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the triton_synth helper module
