from pinet.cli.app import main

main()
