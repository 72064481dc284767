from vlmtui.cli import main

raise SystemExit(main())
