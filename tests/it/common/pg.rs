//! A fresh PostgreSQL database per test, holding Synapse's media tables.

use postgres::{Client, NoTls};

use super::env::test_env;
use super::synapse_schema::SYNAPSE_MEDIA_SCHEMA_POSTGRES;
use super::unique_suffix;
use super::yaml::{Params, pint, pstr};

/// A uniquely named database, dropped when this value is dropped.
pub struct PgDb {
    pub name: String,
    roles: std::cell::RefCell<Vec<String>>,
}

fn superuser_client(dbname: &str) -> Client {
    let env = test_env();
    postgres::Config::new()
        .host_path(&env.pg_socket)
        .port(env.pg_port)
        .user(&env.pg_superuser)
        .dbname(dbname)
        .connect(NoTls)
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to the test PostgreSQL at {} port {} ({e}); \
                 is scripts/test-services.sh running?",
                env.pg_socket.display(),
                env.pg_port
            )
        })
}

impl PgDb {
    /// Creates the database with Synapse's media tables.
    pub fn create() -> PgDb {
        let db = Self::create_empty();
        db.batch(SYNAPSE_MEDIA_SCHEMA_POSTGRES);
        db
    }

    /// Creates an empty database (for a homeserver other than Synapse).
    pub fn create_empty() -> PgDb {
        let name = format!("mo_test_{}", unique_suffix());
        superuser_client("postgres")
            .batch_execute(&format!(
                "CREATE DATABASE \"{name}\" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
            ))
            .expect("CREATE DATABASE");
        PgDb { name, roles: Default::default() }
    }

    /// A superuser connection to this database over the unix socket.
    pub fn client(&self) -> Client {
        superuser_client(&self.name)
    }

    pub fn batch(&self, sql: &str) {
        self.client().batch_execute(sql).unwrap_or_else(|e| panic!("SQL failed on {}: {e}\n{sql}", self.name));
    }

    /// psycopg2 arguments for the superuser over the unix socket (trust auth).
    pub fn socket_params(&self) -> Params {
        let env = test_env();
        vec![
            pstr("user", &env.pg_superuser),
            pstr("database", &self.name),
            pstr("host", env.pg_socket.to_string_lossy()),
            pint("port", env.pg_port as i64),
        ]
    }

    /// psycopg2 arguments for a password login over TCP to `host`
    /// (`127.0.0.1` or `localhost`, both the loopback address).
    pub fn tcp_params(&self, host: &str, user: &str, password: &str) -> Params {
        let env = test_env();
        vec![
            pstr("user", user),
            pstr("password", password),
            pstr("database", &self.name),
            pstr("host", host),
            pint("port", env.pg_port as i64),
        ]
    }

    /// psycopg2 arguments for the superuser (password login) over TCP.
    pub fn superuser_tcp_params(&self, host: &str) -> Params {
        let env = test_env();
        self.tcp_params(host, &env.pg_superuser, &env.pg_superpass)
    }

    /// Creates a login role with `password` that may read this database's
    /// tables, and returns its name. The role is dropped with the database.
    pub fn create_reader_role(&self, password: &str) -> String {
        self.make_reader_role(password, false)
    }

    /// Like create_reader_role, but the role may log in over TCP only with
    /// TLS (it is a member of `mo_ssl_required`, which the test cluster's
    /// pg_hba.conf rejects on non-TLS connections).
    pub fn create_tls_only_reader_role(&self, password: &str) -> String {
        self.make_reader_role(password, true)
    }

    fn make_reader_role(&self, password: &str, tls_only: bool) -> String {
        let role = format!("mo_reader_{}", unique_suffix());
        let pw = password.replace('\'', "''");
        let member = if tls_only { " IN ROLE mo_ssl_required" } else { "" };
        self.batch(&format!(
            "CREATE ROLE \"{role}\" LOGIN PASSWORD '{pw}'{member};\n\
             GRANT CONNECT ON DATABASE \"{db}\" TO \"{role}\";\n\
             GRANT USAGE ON SCHEMA public TO \"{role}\";\n\
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{role}\";",
            db = self.name
        ));
        self.roles.borrow_mut().push(role.clone());
        role
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let mut c = superuser_client("postgres");
        let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name));
        for r in self.roles.borrow().iter() {
            let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS \"{r}\""));
        }
    }
}
