import pathlib
import sys

# tests/ helpers (golden.py, ...) import as top-level modules
sys.path.insert(0, str(pathlib.Path(__file__).parent))
