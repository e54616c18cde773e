from postmesh.cli.main import main

raise SystemExit(main())
