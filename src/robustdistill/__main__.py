from robustdistill.cli import main

main()
