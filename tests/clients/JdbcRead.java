// Reads Patron over the PostgreSQL JDBC driver (pgjdbc) the way BI tools do
// (DBeaver, Metabase, Tableau): the driver's version parse, DatabaseMetaData
// getTables and getColumns, a prepared statement with parameters, and a large
// result streamed with a fetch size inside a transaction. Prints one line per
// check, "name<TAB>value", for tests/e2e/sql.rs to compare with HTTP.
//
// usage: java -cp postgresql.jar JdbcRead.java HOST PORT CUSTOMER_ID
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;

public class JdbcRead {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/patron";
        try (Connection connection = DriverManager.getConnection(url, "analyst", "")) {
            DatabaseMetaData meta = connection.getMetaData();
            System.out.println("product\t" + meta.getDatabaseProductName() + " " + meta.getDatabaseProductVersion());
            System.out.println("major\t" + meta.getDatabaseMajorVersion());

            List<String> tables = new ArrayList<>();
            try (ResultSet rows = meta.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rows.next()) {
                    tables.add(rows.getString("TABLE_NAME"));
                }
            }
            System.out.println("tables\t" + String.join(",", tables));

            List<String> columns = new ArrayList<>();
            try (ResultSet rows = meta.getColumns(null, "public", "customers", "%")) {
                while (rows.next()) {
                    columns.add(rows.getString("COLUMN_NAME") + ":" + rows.getString("TYPE_NAME"));
                }
            }
            System.out.println("columns\t" + String.join(",", columns));

            String sql = "SELECT customer_id, orders, clv FROM customers WHERE customer_id = ? AND orders >= ?";
            try (PreparedStatement statement = connection.prepareStatement(sql)) {
                // Run it more than prepareThreshold (5) times: pgjdbc then
                // switches to a named server-side statement.
                for (int run = 0; run < 6; run++) {
                    statement.setString(1, args[2]);
                    statement.setInt(2, 1);
                    try (ResultSet rows = statement.executeQuery()) {
                        rows.next();
                        if (run == 5) {
                            System.out.println("prepared\t" + rows.getString(1) + "," + rows.getLong(2) + "," + rows.getDouble(3));
                        }
                    }
                }
            }

            // A fetch size streams only inside a transaction (pgjdbc's rule).
            connection.setAutoCommit(false);
            try (Statement statement = connection.createStatement()) {
                statement.setFetchSize(500);
                long count = 0;
                double orders = 0;
                try (ResultSet rows = statement.executeQuery("SELECT customer_id, orders FROM customers")) {
                    while (rows.next()) {
                        count++;
                        orders += rows.getLong(2);
                    }
                }
                System.out.println("fetched\t" + count + "," + (long) orders);
            }
            connection.commit();
        }
    }
}
