from mdgl_analysis.cli import main

raise SystemExit(main())
