// What `npm pack` would publish: the compiled code with its type declarations for both entry
// points, the README and the licence, and nothing else (no sources, tests, fixtures, examples
// or build output). Prints the package size; exits 1 on a problem. Run after `npm run build`.

import { execFileSync } from "node:child_process";

const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { encoding: "utf8" });
const [pack] = JSON.parse(out);
const files = pack.files.map((f) => f.path);
const problems = [];
for (const need of ["package.json", "README.md", "LICENSE", "dist/index.js", "dist/index.d.ts", "dist/node.js", "dist/node.d.ts"]) {
  if (!files.includes(need)) problems.push(`missing ${need}`);
}
for (const f of files) {
  if (!/^(dist\/[a-z-]+\.(js|d\.ts)|package\.json|README\.md|LICENSE)$/.test(f) || /test|fixture|example/i.test(f)) problems.push(`unexpected ${f}`);
}
for (const js of files.filter((f) => f.endsWith(".js"))) {
  if (!files.includes(js.replace(/\.js$/, ".d.ts"))) problems.push(`${js} has no .d.ts`);
}
const kb = (n) => `${(n / 1000).toFixed(1)} kB`;
console.log(`npm pack: ${pack.filename}, ${kb(pack.size)} packed, ${kb(pack.unpackedSize)} unpacked, ${pack.entryCount} files`);
if (problems.length) {
  console.error(`npm pack check failed:\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log("npm pack: type declarations for every module, no sources, tests or fixtures");
