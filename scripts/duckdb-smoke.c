/* Verifies the installed official libduckdb.so and extensions: opens an in-memory database with
 * autoload/autoinstall off, LOADs each extension from the setup folder by path and ATTACHes a
 * DuckLake. Built and run by scripts/setup.sh. The few prototypes below are from DuckDB's C API
 * (duckdb.h), declared here because the npm package ships the library without the header. */
#include <stdio.h>
#include <string.h>
typedef void *duckdb_database, *duckdb_connection, *duckdb_config;
typedef struct { void *a; void *b; void *c; void *d; void *e; void *f; void *g; void *h; } duckdb_result; /* opaque, >= real size */
extern int duckdb_create_config(duckdb_config *);
extern int duckdb_set_config(duckdb_config, const char *, const char *);
extern int duckdb_open_ext(const char *, duckdb_database *, duckdb_config, char **);
extern int duckdb_connect(duckdb_database, duckdb_connection *);
extern int duckdb_query(duckdb_connection, const char *, duckdb_result *);
extern const char *duckdb_result_error(duckdb_result *);
extern void duckdb_destroy_result(duckdb_result *);
extern const char *duckdb_library_version(void);

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s EXT_DIR LAKE_DIR\n", argv[0]); return 2; }
  duckdb_config cfg; duckdb_database db; duckdb_connection con; char *err = NULL;
  duckdb_create_config(&cfg);
  duckdb_set_config(cfg, "autoload_known_extensions", "false");
  duckdb_set_config(cfg, "autoinstall_known_extensions", "false");
  if (duckdb_open_ext(NULL, &db, cfg, &err) != 0) { fprintf(stderr, "open: %s\n", err); return 1; }
  if (duckdb_connect(db, &con) != 0) { fprintf(stderr, "connect failed\n"); return 1; }
  const char *exts[] = {"ducklake", "httpfs", "postgres_scanner", "sqlite_scanner"};
  char sql[4096];
  for (int i = 0; i < 4; i++) {
    duckdb_result r; memset(&r, 0, sizeof r);
    snprintf(sql, sizeof sql, "LOAD '%s/v1.5.5/linux_amd64/%s.duckdb_extension'", argv[1], exts[i]);
    if (duckdb_query(con, sql, &r) != 0) { fprintf(stderr, "%s: %s\n", exts[i], duckdb_result_error(&r)); return 1; }
    duckdb_destroy_result(&r);
  }
  duckdb_result r; memset(&r, 0, sizeof r);
  snprintf(sql, sizeof sql,
           "ATTACH 'ducklake:%s/smoke.ducklake' AS lake (DATA_PATH '%s/data/');"
           "CREATE TABLE IF NOT EXISTS lake.t(i INTEGER); INSERT INTO lake.t VALUES (1);",
           argv[2], argv[2]);
  if (duckdb_query(con, sql, &r) != 0) { fprintf(stderr, "ducklake: %s\n", duckdb_result_error(&r)); return 1; }
  duckdb_destroy_result(&r);
  printf("duckdb %s: loaded ducklake, httpfs, postgres_scanner, sqlite_scanner; attached and wrote a DuckLake\n",
         duckdb_library_version());
  return 0;
}
