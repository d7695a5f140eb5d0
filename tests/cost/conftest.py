import os
import sys

# lets tests import the local helper `_storage_counter`
sys.path.insert(0, os.path.dirname(__file__))
