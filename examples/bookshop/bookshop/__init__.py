"""A small bookshop backend: catalog and orders in PostgreSQL, a read cache in Valkey,
order events on a NATS JetStream stream, payment credentials in Vault."""
