from ltexport.cli import main

main()
