"""The main job on embedded defaults, as `lensops demo` does (same options; see --help):
sample data -> validate -> train -> promote -> serve -> predictions over HTTP. `make demo` runs it.
"""

from lensops.cli import main

if __name__ == "__main__":
    main("demo")
