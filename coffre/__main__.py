from coffre.cli.main import main

main()
