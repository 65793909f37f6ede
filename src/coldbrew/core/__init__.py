"""The bottom layer: plain types every other layer may import (and that import none of them)."""
