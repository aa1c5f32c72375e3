from omnistock.topic_operator.main import main

main()
