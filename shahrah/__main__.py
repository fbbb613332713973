from shahrah.cli import main

main()
