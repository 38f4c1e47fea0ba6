from knsd.cli import main

main()
