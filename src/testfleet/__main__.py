from testfleet.cli import main

raise SystemExit(main())
