//! What every blob backend must do.

use bytes::Bytes;

use super::Blobs;

/// Put, get, replace, delete, a missing object, a large object, and a refused name.
pub async fn run_all(blobs: &Blobs) {
    let name = format!("{}.att_1_{:016x}", "ab".repeat(32), rand_u64());
    assert_eq!(blobs.get(&name).await.expect("get"), None);
    blobs
        .put(&name, Bytes::from_static(b"hello"))
        .await
        .expect("put");
    assert_eq!(
        blobs.get(&name).await.expect("get"),
        Some(Bytes::from_static(b"hello"))
    );
    blobs
        .put(&name, Bytes::from_static(b"again"))
        .await
        .expect("replace");
    assert_eq!(
        blobs.get(&name).await.expect("get"),
        Some(Bytes::from_static(b"again"))
    );
    blobs.delete(&name).await.expect("delete");
    assert_eq!(blobs.get(&name).await.expect("get"), None);
    blobs.delete(&name).await.expect("delete twice");

    // Larger than one chunk of any backend (the object store splits at 128 KiB).
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
    let big_name = format!("{}.att_2_{:016x}", "cd".repeat(32), rand_u64());
    blobs
        .put(&big_name, Bytes::from(big.clone()))
        .await
        .expect("put big");
    assert_eq!(
        blobs.get(&big_name).await.expect("get big").as_deref(),
        Some(big.as_slice())
    );
    blobs.delete(&big_name).await.expect("delete big");

    assert!(blobs.put("../x", Bytes::new()).await.is_err());
}

fn rand_u64() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
