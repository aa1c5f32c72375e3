"""The orders service: order lifecycle as a saga over Kafka."""
