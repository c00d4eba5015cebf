-- One PostgreSQL for both: the registry (database compeft, created by POSTGRES_DB) and Prefect's own.
CREATE DATABASE prefect;
