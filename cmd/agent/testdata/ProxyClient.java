// ProxyClient drives the Vigil proxy the way JDBC applications and tools built on it
// (DBeaver, IntelliJ) do, and prints one key=value line per check for TestProxyJDBC.
// Run: java -cp /usr/share/java/postgresql.jar ProxyClient.java JDBC-URL
import java.sql.*;

public class ProxyClient {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0])) {
            // Past prepareThreshold (5) the driver switches to named server-side statements
            // and binary results.
            int found = 0;
            try (PreparedStatement ps = c.prepareStatement("SELECT name FROM customers WHERE id = ?")) {
                for (int i = 0; i < 10; i++) {
                    ps.setInt(1, 1 + i % 2);
                    try (ResultSet rs = ps.executeQuery()) {
                        if (rs.next() && rs.getString(1) != null) found++;
                    }
                }
            }
            System.out.println("prepared=" + found);

            // A batch goes out as one pipeline of Bind/Execute before a single Sync.
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO events_log (id, note) VALUES (?, ?)")) {
                for (int i = 0; i < 100; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "note " + i);
                    ps.addBatch();
                }
                int n = 0;
                for (int r : ps.executeBatch()) n += r;
                System.out.println("batch=" + n);
            }

            try (Statement st = c.createStatement()) {
                st.execute("DROP TABLE customers");
                System.out.println("drop=executed");
            } catch (SQLException e) {
                System.out.println("drop_sqlstate=" + e.getSQLState());
                System.out.println("drop_message=" + e.getMessage().replace('\n', ' '));
            }
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM customers")) {
                rs.next();
                System.out.println("after_refusal=" + rs.getInt(1));
            }

            // Inside a transaction a refusal aborts it, as any error would; rollback recovers.
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.executeUpdate("UPDATE customers SET name = 'x' WHERE id = 1");
                try {
                    st.executeUpdate("DELETE FROM customers");
                    System.out.println("tx_delete=executed");
                } catch (SQLException e) {
                    System.out.println("tx_delete_sqlstate=" + e.getSQLState());
                }
                try {
                    st.executeQuery("SELECT 1");
                    System.out.println("tx_after=usable");
                } catch (SQLException e) {
                    System.out.println("tx_after_sqlstate=" + e.getSQLState());
                }
            }
            c.rollback();
            c.setAutoCommit(true);
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT name FROM customers WHERE id = 1")) {
                rs.next();
                System.out.println("rolled_back_name=" + rs.getString(1));
            }

            try (PreparedStatement ps = c.prepareStatement("SELECT email FROM customers WHERE id = ?")) {
                for (int i = 0; i < 7; i++) { // text, then binary once the statement is named
                    ps.setInt(1, 1);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        System.out.println("email=" + rs.getString(1));
                    }
                }
            }

            // What a database tool asks first.
            DatabaseMetaData md = c.getMetaData();
            int tables = 0;
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) tables++;
            }
            System.out.println("metadata_tables=" + tables);
            try (ResultSet rs = md.getColumns(null, "public", "customers", "%")) {
                int cols = 0;
                while (rs.next()) cols++;
                System.out.println("metadata_columns=" + cols);
            }
        }
    }
}
