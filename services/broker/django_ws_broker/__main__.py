from django_ws_broker.cli import main

main()
