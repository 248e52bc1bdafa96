using Teal.Testing;

namespace Teal.MySql.Tests.Replication;

/// <summary>A small application schema with what a copy must carry: generated and JSON columns, NULLs, a view, a routine, a trigger, an event.</summary>
internal static class SampleSchema
{
    public static async Task CreateAsync(MariaDbServer blue, int rows)
    {
        await blue.ExecuteAsync(
            """
            CREATE DATABASE app;
            CREATE TABLE app.orders (
                id BIGINT AUTO_INCREMENT PRIMARY KEY,
                customer VARCHAR(40) NOT NULL,
                amount DECIMAL(12,2),
                doubled DECIMAL(13,2) AS (amount * 2) VIRTUAL,
                data JSON,
                payload BLOB,
                created DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
            ) ENGINE=InnoDB;
            CREATE TABLE app.audit (id INT AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL) ENGINE=InnoDB;
            CREATE TRIGGER app.orders_audit AFTER INSERT ON app.orders FOR EACH ROW INSERT INTO app.audit (order_id) VALUES (NEW.id);
            CREATE VIEW app.big_orders AS SELECT id, amount FROM app.orders WHERE amount > 50;
            CREATE FUNCTION app.twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
            CREATE EVENT app.nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM app.audit WHERE id < 0;
            CREATE USER app@'%' IDENTIFIED BY 'app-pw';
            GRANT SELECT, INSERT, UPDATE, DELETE ON app.* TO app@'%';
            CREATE USER admin@'%' IDENTIFIED BY 'admin-pw';
            GRANT ALL PRIVILEGES ON *.* TO admin@'%';
            """);
        await blue.ExecuteAsync(
            $"""
            INSERT INTO app.orders (customer, amount, data, payload)
            SELECT CONCAT('c', seq), IF(seq % 7 = 0, NULL, seq % 100 + 0.25), JSON_OBJECT('n', seq), IF(seq % 3 = 0, NULL, UNHEX(MD5(seq)))
            FROM app.seq_1_to_{rows}
            """);
    }
}
