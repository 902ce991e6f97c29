"""``python -m stn_train ...`` and ``torchrun ... -m stn_train run ...``."""

from stn_train.cli import main

if __name__ == "__main__":
    main()
