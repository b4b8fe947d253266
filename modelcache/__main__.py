from modelcache.ops.cli import main

main()
