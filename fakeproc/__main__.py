from fakeproc.cli import main

raise SystemExit(main())
