"""Media inputs: sniffing, image decoding, PDF rendering and guarded fetching.

Modules:
    sniff      -- what a byte string is (from magic bytes only)
    datauri    -- ``data:`` URI decoding
    images     -- safe image decoding to RGB and the content hash
    pdf        -- page selection and rendering of PDFs (pypdfium2)
    addresses  -- which IP addresses may be fetched (SSRF guard)
    fetch      -- the guarded http(s)/file fetcher
"""
