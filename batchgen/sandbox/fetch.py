"""The emulator's optional image fetch (`fetch_images`): what the real API does at create.

When on, a create fetches its `image_url` (no credentials, first bytes only) before it
is charged; a URL that does not serve an image makes a task that is still charged but
ends in status 4, as the real API would. Tests use it to prove that presigned URLs work
end to end and that pre-flight saves the credits a broken URL costs.
"""

from __future__ import annotations

import aiohttp

from batchgen.assets import IMAGE, sniff


async def image_fails(url: object, timeout: float = 5.0) -> bool:
    """True when `url` does not serve an image right now."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return True
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.get(url) as resp:
            if resp.status >= 400:
                return True
            head = await resp.content.read(64 * 1024)
    except (aiohttp.ClientError, TimeoutError, OSError):
        return True
    found = sniff(head)
    return found is None or found.kind != IMAGE
