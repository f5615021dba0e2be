// Validates the gateway's OpenAPI document (docs/openapi/gateway.yaml) against the official
// OpenAPI 3.0 JSON schema, with every $ref resolved. The Rust test
// `the_http_surface_matches_its_openapi_document` checks that the gateway does what it says;
// this checks that what it says is a valid OpenAPI document that tools (Swagger UI, code
// generators) accept. Run by `npm test`.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Validator } from '@seriousme/openapi-schema-validator';

const file = fileURLToPath(new URL('../../docs/openapi/gateway.yaml', import.meta.url));
const text = readFileSync(file, 'utf8');

async function check(source) {
  const v = new Validator();
  const r = await v.validate(source);
  return { valid: r.valid, version: v.version, errors: r.errors };
}

const r = await check(text);
if (!r.valid || r.version !== '3.0') {
  console.error(`openapi: ${file} is not a valid OpenAPI 3.0 document (version ${r.version}):`);
  console.error(JSON.stringify(r.errors, null, 2));
  process.exit(1);
}
// The validator must catch what it is here for: a dangling reference and a bad status code.
const broken = [
  text.replace("schemas/FlagSet'", "schemas/Missing'"),
  text.replace("'204':", "'2x4':"),
];
for (const [i, b] of broken.entries()) {
  if (b === text) {
    console.error(`openapi: self-check ${i} did not change the document; update check-openapi.mjs`);
    process.exit(1);
  }
  if ((await check(b)).valid) {
    console.error(`openapi: self-check ${i}: a broken document was accepted`);
    process.exit(1);
  }
}
console.log(`openapi: ${file} is a valid OpenAPI ${r.version} document`);
