-- The schema the effective-WHERE corpora (where_evasions.yaml, where_benign.yaml) run
-- against: victim is every statement's target (10 rows), customers and orders the other
-- tables. Used by pkg/sqlparse's server check and pkg/enforce's proxy test.
CREATE TABLE customers (id int PRIMARY KEY, email text);
INSERT INTO customers VALUES (1, 'a@example.com'), (2, 'b@example.com'), (3, NULL);
CREATE TABLE victim (id int PRIMARY KEY, cid int, name text, n int DEFAULT 0, flag bool DEFAULT false,
	deleted_at timestamptz, created timestamptz DEFAULT now(), created_at timestamptz);
INSERT INTO victim (id, cid, name, flag, deleted_at, created_at)
	SELECT i, i % 3 + 1, CASE WHEN i <= 5 THEN 'ab' ELSE 'cd' END || i, i % 2 = 0,
		CASE WHEN i > 8 THEN now() END, now() - i * interval '12 hours'
	FROM generate_series(1, 10) i;
CREATE TABLE orders (id int PRIMARY KEY, customer_id int, total int);
INSERT INTO orders VALUES (1, 1, 10), (2, 2, 3), (3, 4, 7);
