from stn_train.cli import main

main()
