"""The topic operator: KafkaTopic custom resources reconciled into Kafka topics."""
