// ParityClient is one JDBC session for TestProxyCaptureParityJDBC, run once directly and once
// through the proxy: the driver's own start-up statements, a multi-statement execute (which
// the driver splits and pipelines), setClientInfo("ApplicationName") (a SET after start-up),
// prepared statements past prepareThreshold (named, binary), parameters of several types,
// errors at Bind and at Execute, a batch, and a transaction. It prints "pid=N", the backend
// that ran it.
// Run: java -cp /usr/share/java/postgresql.jar ParityClient.java JDBC-URL
import java.math.BigDecimal;
import java.sql.*;

public class ParityClient {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0])) {
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT pg_backend_pid()")) {
                rs.next();
                System.out.println("pid=" + rs.getInt(1));
            }
            try (Statement st = c.createStatement()) {
                st.execute("CREATE TEMP TABLE parity (id int PRIMARY KEY, name text, price numeric, at timestamp, ok bool)");
                st.execute("INSERT INTO parity VALUES (1, 'a', 1.5, now(), true); INSERT INTO parity VALUES (2, 'b', 2.5, now(), false), (3, 'c', 3.5, now(), true)");
            }
            c.setClientInfo("ApplicationName", "parity-jdbc");
            try (PreparedStatement ps = c.prepareStatement("SELECT name FROM parity WHERE id = ? AND name <> ?")) {
                for (int i = 0; i < 7; i++) {
                    ps.setInt(1, 1 + i % 3);
                    ps.setString(2, "zz");
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                        }
                    }
                }
            }
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO parity VALUES (?, ?, ?, ?, ?)")) {
                ps.setLong(1, 4);
                ps.setString(2, "dé");
                ps.setBigDecimal(3, new BigDecimal("4.25"));
                ps.setTimestamp(4, Timestamp.valueOf("2026-02-03 04:05:06"));
                ps.setNull(5, Types.BOOLEAN);
                ps.executeUpdate();
            }
            expectError("22012", () -> {
                try (Statement st = c.createStatement()) {
                    st.executeQuery("SELECT 1/0");
                }
            });
            expectError("22012", () -> {
                try (PreparedStatement ps = c.prepareStatement("SELECT 1/?::int")) {
                    ps.setInt(1, 0);
                    ps.executeQuery();
                }
            });
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO parity (id, name) VALUES (?, ?)")) {
                for (int i = 10; i < 13; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "n" + i);
                    ps.addBatch();
                }
                ps.executeBatch();
            }
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.executeUpdate("UPDATE parity SET price = 9 WHERE id < 3");
            }
            c.commit();
            c.setAutoCommit(true);
        }
    }

    interface Step {
        void run() throws SQLException;
    }

    static void expectError(String code, Step s) throws SQLException {
        try {
            s.run();
        } catch (SQLException e) {
            if (!code.equals(e.getSQLState())) {
                throw e;
            }
            return;
        }
        throw new SQLException("no error, want SQLSTATE " + code);
    }
}
