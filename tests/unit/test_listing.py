"""parse_listing: the List Blobs reply read directly (remote.list_pages)."""

from __future__ import annotations

from blobmount.azure import parse_listing

REPLY = b"""<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://127.0.0.1:1/devstoreaccount1" ContainerName="c">
<Prefix>d/</Prefix><Marker/><MaxResults>3</MaxResults><Delimiter>/</Delimiter>
<Blobs>
<Blob><Name>d/a.txt</Name><Properties>
  <Last-Modified>Sun, 22 Nov 2026 01:14:31 GMT</Last-Modified><Etag>0x1</Etag>
  <Content-Length>12</Content-Length></Properties><Metadata/></Blob>
<Blob><Name>d/kept</Name><Properties>
  <Last-Modified>Sun, 22 Nov 2026 01:14:31 GMT</Last-Modified><Etag>"0x2"</Etag>
  <Content-Length>3</Content-Length></Properties>
  <Metadata><mtime>2017-07-14T02:40:00.123456789Z</mtime></Metadata></Blob>
<Blob><Name>d/empty</Name><Properties>
  <Last-Modified>Sun, 22 Nov 2026 01:14:31 GMT</Last-Modified><Etag>0x3</Etag>
  <Content-Length>0</Content-Length></Properties>
  <Metadata><hdi_isfolder>true</hdi_isfolder></Metadata></Blob>
<Blob><Name Encoded="true">d/line%0Abreak</Name><Properties>
  <Last-Modified>Sun, 22 Nov 2026 01:14:31 GMT</Last-Modified><Etag>0x4</Etag>
  <Content-Length>1</Content-Length></Properties></Blob>
<BlobPrefix><Name>d/sub/</Name></BlobPrefix>
</Blobs><NextMarker>d/zzz</NextMarker></EnumerationResults>"""


def test_a_listing_reply_becomes_files_folders_and_the_next_marker():
    items, marker = parse_listing(REPLY)
    assert marker == "d/zzz"
    by_name = {item.name: item for item in items}
    assert list(by_name) == ["d/a.txt", "d/kept", "d/empty/", "d/line\nbreak", "d/sub/"]
    a = by_name["d/a.txt"]
    assert (a.is_dir, a.size, a.etag) == (False, 12, "0x1")
    assert a.mtime_ns == 1795310071 * 10**9
    assert by_name["d/kept"].etag == "0x2"
    assert by_name["d/kept"].mtime_ns == 1500000000 * 10**9 + 123456789
    assert by_name["d/empty/"].is_dir and by_name["d/sub/"].is_dir


def test_the_last_page_has_no_marker():
    items, marker = parse_listing(
        b"<EnumerationResults><Blobs/><NextMarker/></EnumerationResults>")
    assert (items, marker) == ([], "")


def test_an_answers_time_is_its_mtime_metadata_else_its_last_modified() -> None:
    from email.utils import parsedate_to_datetime

    from blobmount.azure.listing import answer_mtime_ns, blob_mtime_ns, format_mtime

    modified = "Sun, 06 Dec 2026 22:14:47 GMT"
    assert answer_mtime_ns(modified, None) == blob_mtime_ns(parsedate_to_datetime(modified))
    assert answer_mtime_ns(modified, {"mtime": format_mtime(1_234_567_891)}) == 1_234_567_891
    assert answer_mtime_ns(modified, {"mtime": "not a time"}) == 1796595287 * 10**9
    assert answer_mtime_ns(None, None) == 0
