from mbrec.cli import main

main()
