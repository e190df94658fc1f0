from sandman.cli import main

raise SystemExit(main())
