"""`python -m vlmtui.core.supervise`: the name `launch` starts on the host.

It is a protocol with whatever vlmtui is installed on the host, so the name stays while the
code lives in `fleet.onhost.supervise`.
"""

import sys

from vlmtui.core.fleet.onhost.supervise import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
