from adalora_search.cli import main

main()
