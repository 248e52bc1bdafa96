namespace Teal.Postgres.Tests.Replication;

/// <summary>A schema with what production databases hold and logical replication trips over.</summary>
internal static class RealisticSchema
{
    public const int BigRows = 1_000_000;

    public const string Sql = """
        CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
        CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
        CREATE TABLE customers (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name text NOT NULL,
            mood mood NOT NULL DEFAULT 'ok',
            created timestamptz NOT NULL DEFAULT now());
        CREATE TABLE orders (
            id serial PRIMARY KEY,
            customer_id bigint NOT NULL REFERENCES customers (id),
            qty positive_int NOT NULL,
            total numeric(12, 2),
            updated_at timestamptz);
        CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
        CREATE TRIGGER orders_touch BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch();
        CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, payload jsonb, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
        CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        CREATE TABLE audit_log (at timestamptz NOT NULL DEFAULT now(), message text);
        ALTER TABLE audit_log REPLICA IDENTITY FULL;
        CREATE TABLE big (id bigint PRIMARY KEY, v int NOT NULL, note text);
        CREATE VIEW customer_orders AS
            SELECT c.name, count(o.id) AS orders FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.name;

        INSERT INTO customers (name, mood) SELECT 'customer ' || g, (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood FROM generate_series(1, 1000) g;
        INSERT INTO orders (customer_id, qty, total) SELECT 1 + g % 1000, 1 + g % 7, g * 1.5 FROM generate_series(1, 5000) g;
        INSERT INTO events SELECT g, DATE '2025-06-01' + (g % 400), jsonb_build_object('n', g) FROM generate_series(1, 4000) g;
        INSERT INTO audit_log (message) SELECT 'boot ' || g FROM generate_series(1, 100) g;
        INSERT INTO big SELECT g, g % 1000, 'row ' || g FROM generate_series(1, 1000000) g;
        ANALYZE;
        """;

    /// <summary>Inserts, updates and deletes on every table.</summary>
    public const string Changes = """
        INSERT INTO customers (name, mood) VALUES ('late customer', 'happy');
        UPDATE customers SET mood = 'sad' WHERE id <= 10;
        DELETE FROM orders WHERE id BETWEEN 100 AND 149;
        INSERT INTO orders (customer_id, qty, total) VALUES (1, 3, 99.99);
        UPDATE orders SET qty = 6 WHERE id <= 20;
        INSERT INTO events VALUES (100000, DATE '2026-03-01', '{"late": true}');
        UPDATE events SET at = DATE '2026-02-02' WHERE id = 1;
        DELETE FROM events WHERE id BETWEEN 10 AND 19;
        INSERT INTO audit_log (message) VALUES ('changed');
        UPDATE audit_log SET message = 'edited' WHERE message = 'boot 1';
        DELETE FROM audit_log WHERE message = 'boot 2';
        INSERT INTO big VALUES (2000001, 1, 'new');
        UPDATE big SET v = -1 WHERE id % 100000 = 0;
        DELETE FROM big WHERE id BETWEEN 500 AND 599;
        """;

    /// <summary>One digest per table, comparable across servers.</summary>
    public const string Digest = """
        SELECT (SELECT count(*) || ':' || sum(hashtext(c::text)) FROM customers c)
            || '|' || (SELECT count(*) || ':' || sum(hashtext(o.id || o.qty::text || o.total)) FROM orders o)
            || '|' || (SELECT count(*) || ':' || sum(hashtext(e::text)) FROM events e)
            || '|' || (SELECT count(*) || ':' || sum(hashtext(a.message)) FROM audit_log a)
            || '|' || (SELECT count(*) || ':' || sum(v) FROM big)
        """;
}
