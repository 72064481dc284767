"""`python -m vlmtui.core.gpus`: the name remote hosts run to report their GPUs.

It is a protocol with whatever vlmtui is installed on the host, so the name stays while the
code lives in `fleet.gpus`.
"""

from vlmtui.core.fleet.gpus import main

if __name__ == "__main__":
    main()
