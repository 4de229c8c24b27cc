/**
 * memory:// against the conformance suite, imported the way a user imports it: through the package
 * name (`roster-sd/testing`, resolved by the package's own `exports`, i.e. the built dist/), with
 * the published memory fixture. A backend author's test file looks like this one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conformance, memoryFixture, type MemoryFixture } from 'roster-sd/testing';

describe('memory:// conformance (through roster-sd/testing)', () => {
  let fx: MemoryFixture;
  beforeAll(async () => {
    fx = await memoryFixture();
  });
  afterAll(async () => {
    await fx?.close();
  });
  conformance(
    { describe, it, expect, beforeAll, afterAll },
    {
      open: () => fx.open(),
      ttl: 600,
      compact: () => fx.compact(),
    },
  );
});
