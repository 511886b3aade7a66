//! `plinth migrate`: moves a whole installation between stores (see
//! `plinth_host::store::transfer`) and prints what it moved and how the copy was checked.

use plinth_host::store::transfer::{self, Place, TransferError};

/// Copies `from` into `to` and prints the verified inventory.
pub(crate) async fn run(from: &str, to: &str, force: bool) -> Result<(), TransferError> {
    let (source_place, target_place) = (Place::parse(from), Place::parse(to));
    if source_place.same_as(&target_place) {
        return Err(TransferError::SamePlace(source_place.to_string()));
    }
    let source = source_place.open(true).await?;
    let target = target_place.open(false).await?;
    eprintln!("migrating {source_place} to {target_place}");
    let report =
        transfer::migrate(&*source, &*target, (&source_place, &target_place), force).await?;
    println!("migrated {source_place} to {target_place}");
    println!(
        "{:<10} {:>9} {:>14} {:>9}",
        "kind", "records", "bytes", "sections"
    );
    for (kind, (records, bytes, sections)) in report.inventory.kinds() {
        println!("{kind:<10} {records:>9} {bytes:>14} {sections:>9}");
    }
    let checked = if report.into_non_empty {
        "every record of the source found as it is in the target"
    } else {
        "source and target hold the same records"
    };
    println!("verified: {checked}");
    println!("inventory sha256: {}", report.inventory.sha256());
    Ok(())
}
