from testfleet.entry import main

raise SystemExit(main())
