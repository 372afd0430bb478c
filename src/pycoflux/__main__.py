from __future__ import annotations

from pycoflux.cli.main import main

if __name__ == "__main__":
    main()
